-- The most bytes of prompt and completion a sampled request of the project records on its
-- spans (gen_ai.input.messages / gen_ai.output.messages); 0: never recorded.
ALTER TABLE projects ADD COLUMN content_capture_bytes BIGINT NOT NULL DEFAULT 0;
