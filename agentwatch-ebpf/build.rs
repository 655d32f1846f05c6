//! Rebuild when the bpf-linker binary changes: it is an undeclared dependency
//! of every eBPF build (see aya-template for why it cannot be declared).
fn main() {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(linker) = std::env::split_paths(&path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|candidate| candidate.is_file())
    {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
