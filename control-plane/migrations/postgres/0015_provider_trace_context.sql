-- Whether traced requests send a provider W3C trace context (traceparent, tracestate).
ALTER TABLE providers ADD COLUMN send_trace_context BOOLEAN NOT NULL DEFAULT TRUE;
