"""The webhook service: a tenant's webhook subscriptions, the signed delivery
of the events they select (retried on a schedule, logged per delivery), and a
batch's own webhookUrl, delivered once when the batch finishes."""
