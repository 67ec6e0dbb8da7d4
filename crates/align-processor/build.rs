//! Compiles `csrc/jpeg_shim.c` (libjpeg calls with C-side error recovery) against the
//! libjpeg-turbo-derived library that `mozjpeg-sys` builds and links.

fn main() {
    println!("cargo:rerun-if-changed=csrc/jpeg_shim.c");
    let include = std::env::var_os("DEP_JPEG_INCLUDE")
        .expect("mozjpeg-sys did not export its include directories (DEP_JPEG_INCLUDE)");
    let mut build = cc::Build::new();
    for dir in std::env::split_paths(&include) {
        build.include(dir);
    }
    build
        .file("csrc/jpeg_shim.c")
        .warnings(true)
        .compile("align_jpeg_shim");
}
