//! Tests across the policy modules: parsing whole files, loading directories,
//! compiling, and a randomised cross-check of the compiler against the
//! definition of the semantics.

mod compile;
mod crosscheck;
mod k8s;
mod load;
mod netpol;
mod parse;
mod source;
