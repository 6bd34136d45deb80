// Included by the build scripts of every crate that links libtorch (worker, tests).
//
// torch-sys tells its direct dependents where libtorch's shared libraries are
// (DEP_TCH_LIBTORCH_LIB). Writing that directory into the binaries' rpath means they run without
// anyone exporting LD_LIBRARY_PATH.
//
// On a CUDA build of libtorch the linker's default --as-needed drops libtorch_cuda.so, since no
// symbol of ours refers to it, and libtorch then reports no GPU. Linking it with --no-as-needed
// keeps it loaded, so `--device cuda:N` works on a GPU node.
fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
