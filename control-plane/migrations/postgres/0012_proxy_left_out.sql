-- What each proxy last reported leaving out of its attempts (JSON list of {name, kind, until_us}).
ALTER TABLE proxies ADD COLUMN left_out TEXT NOT NULL DEFAULT '[]';
