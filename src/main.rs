//! The `whatan` binary: all logic lives in the library (`cli::main`).

fn main() -> std::process::ExitCode {
    whatan::cli::main()
}
