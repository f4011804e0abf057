//! `celeriac warm` as the end-to-end tests run it (the `celeriac` binary lives in another crate).

fn main() -> std::process::ExitCode {
    let args = celeriac_worker::cli::warm::parse_from(std::env::args_os());
    celeriac_worker::cli::warm::main(&args)
}
