//! Helpers for the end-to-end tests: spawning the real binaries on loopback.
