//! The `weir` command.
fn main() {
    eprintln!("weir: not built yet");
    std::process::exit(1);
}
