//! Unit tests of parsing, validation and evaluation.
