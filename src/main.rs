fn main() -> std::process::ExitCode {
    sdbridge::cli::main()
}
