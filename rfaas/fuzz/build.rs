//! Exports the fuzz targets' symbols dynamically (`-rdynamic`): the `invocation` target loads
//! the instrumented `functions-example` cdylib, whose sanitizer and coverage hooks resolve
//! against the runtime linked into the target.

fn main() {
    println!("cargo::rustc-link-arg-bins=-rdynamic");
    // Without this, any change under the package (the growing corpus) would rerun the script
    // and rebuild every target.
    println!("cargo::rerun-if-changed=build.rs");
}
