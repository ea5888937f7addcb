"""External delivery providers: one interface (:class:`ExternalProvider`), two transports
(webhook and polling), the callback endpoint, the worker that submits and polls, and a
simulator of a provider for tests and demos."""
