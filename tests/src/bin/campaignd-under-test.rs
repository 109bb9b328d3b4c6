//! `campaignd`, built as a binary of this test package so that the e2e tests spawn the program
//! of their own build: `env!("CARGO_BIN_EXE_campaignd-under-test")` is set by Cargo for this
//! package's tests only, and Cargo rebuilds this binary before it runs them. A path such as
//! `target/debug/campaignd` can hold the binary of an older build.

fn main() -> std::process::ExitCode {
    campaignd::main()
}
