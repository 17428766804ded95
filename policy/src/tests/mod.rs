//! Unit tests: every validation error (field path and line), canonical JSON, and every action.

mod actions;
mod phases;
mod roundtrip;
mod validate;
mod validate_config;
