//! End-to-end and conformance tests of vodsource against real services. The tests are in
//! `tests/`; this library holds nothing but the crate's documentation.
