//! The exported NVML C ABI. Every `extern "C"` function here keeps the exact
//! name, signature and return codes of the NVIDIA library, so unmodified
//! NVML clients load this library in its place.
//!
//! # Safety
//!
//! The exports are `unsafe` because they accept raw pointers from C. The
//! contract is NVML's: every out-parameter is null or valid for writing its
//! type, every buffer is valid for the length the caller passes, every string
//! is NUL-terminated. Null pointers are checked and answered with
//! `NVML_ERROR_INVALID_ARGUMENT`; handles are never dereferenced (see
//! [`handles`]); no panic crosses the boundary ([`support::guard`]).

#![allow(non_snake_case)]

mod device;
mod handles;
mod mig;
mod support;
mod system;
mod types;
