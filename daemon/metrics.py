"""Prometheus metrics, one registry per application (tests build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        p = "zalo_bridge_"
        self.http_requests = Counter(p + "http_requests", "HTTP requests served", ["route", "status"], registry=r)
        self.http_seconds = Histogram(p + "http_request_seconds", "Time to answer", ["route"], buckets=_LATENCY, registry=r)
        self.rejections = Counter(
            p + "webhook_rejections", "Webhook requests refused", ["source", "reason"], registry=r
        )
        self.zalo_events = Counter(
            p + "zalo_events", "Zalo webhook events by name and what happened", ["event", "result"], registry=r
        )
        self.campaign_recipients = Counter(
            p + "campaign_recipients", "CleverTap webhook recipients by result", ["result"], registry=r
        )
        self.queue_jobs = Gauge(p + "queue_jobs", "Jobs in the store", ["kind", "state"], registry=r)
        self.jobs_finished = Counter(p + "jobs_finished", "Jobs settled", ["kind", "outcome"], registry=r)
        self.upload_records = Histogram(
            p + "clevertap_upload_batch_records", "Records per /1/upload call",
            buckets=(1, 10, 50, 100, 250, 500, 750, 1000), registry=r,
        )
        self.upload_seconds = Histogram(
            p + "clevertap_upload_seconds", "Latency of /1/upload calls", buckets=_LATENCY, registry=r
        )
        self.upload_calls = Counter(p + "clevertap_upload_calls", "/1/upload calls by result", ["result"], registry=r)
        self.upload_record_results = Counter(
            p + "clevertap_records", "CleverTap records by result", ["result"], registry=r
        )
        self.zalo_calls = Counter(
            p + "zalo_api_calls", "Zalo API calls by endpoint and error code", ["endpoint", "error"], registry=r
        )
        self.zalo_seconds = Histogram(
            p + "zalo_api_seconds", "Latency of Zalo API calls", ["endpoint"], buckets=_LATENCY, registry=r
        )
        self.throttle_wait = Histogram(
            p + "throttle_wait_seconds", "Time spent waiting for the Zalo rate budget", ["priority"],
            buckets=_LATENCY, registry=r,
        )
        self.token_expiry = Gauge(
            p + "zalo_access_token_expiry_seconds", "Seconds until the access token expires (negative: none)",
            registry=r,
        )
        self.token_refreshes = Counter(p + "zalo_token_refreshes", "Token refreshes by outcome", ["outcome"], registry=r)
        self.backfill_users = Counter(p + "backfill_users", "Followers uploaded by the backfill", registry=r)
        self.backfill_listed = Counter(p + "backfill_listed_users", "Users listed by the backfill", registry=r)
        self.backfill_seconds = Gauge(p + "backfill_last_pass_seconds", "Duration of the last backfill pass", registry=r)
        self.backfill_last_success = Gauge(
            p + "backfill_last_success_timestamp", "When a backfill pass last completed", registry=r
        )
        self.backfill_progress = Gauge(
            p + "backfill_pass_progress_ratio", "Slices finished in the running pass", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
