"""Outbound integrations: integrators' webhooks (registration, fan-in of bus events into
deliveries, a signed and retried sender with a delivery log) and customer notifications
(templated, deduplicated, sent through a channel; by default a webhook event). See
docs/webhooks.md."""
