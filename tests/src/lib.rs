//! Helpers for weir's multi-process tests: start the real daemon binary on a
//! temporary directory and socket, and always stop it.
