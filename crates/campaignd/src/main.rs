//! The `campaignd` binary: the program is the library (see `lib.rs` for why).

fn main() -> std::process::ExitCode {
    campaignd::main()
}
