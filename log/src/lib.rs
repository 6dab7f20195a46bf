//! Till event log (work in progress).
