//! weir-bench: placeholder.
fn main() {}
