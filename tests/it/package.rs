//! `cargo xtask package`, package verification, manifest counts, and `rfaas-executor inspect`.

use executor::package::{MANIFEST_FILE, fingerprint_hex, sha256_file};
use executor::{FunctionLibrary, Package, PackageError};
use tests::{cargo, example_package, run, scratch_dir, text, workspace_root};

/// The number of `#[rfaas::function]` attributes in functions-example's sources.
fn annotated_functions() -> usize {
    let dir = workspace_root().join("functions-example/src");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("functions-example/src") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let src = std::fs::read_to_string(&path).expect("source");
            n += src
                .lines()
                .filter(|l| l.trim() == "#[rfaas::function]")
                .count();
        }
    }
    assert!(
        n >= 6,
        "functions-example should have its functions, found {n}"
    );
    n
}

#[test]
fn package_holds_library_digest_and_manifest() {
    let dir = example_package();
    let pkg = Package::read(dir).expect("manifest parses");
    assert_eq!(pkg.crate_name, "functions-example");
    assert_eq!(pkg.abi_version, rfaas::wire::ABI_VERSION);
    let lib = dir.join(&pkg.library);
    let digest = sha256_file(&lib).expect("hash");
    assert_eq!(pkg.sha256, digest);
    let sidecar =
        std::fs::read_to_string(dir.join(format!("{}.sha256", pkg.library))).expect("sha256 file");
    assert_eq!(sidecar, format!("{digest}  {}\n", pkg.library));
    let names: Vec<&str> = pkg.functions.iter().map(|f| f.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "indices follow name order");
    for (i, f) in pkg.functions.iter().enumerate() {
        assert_eq!(f.index as usize, i);
    }
}

#[test]
fn manifest_count_equals_annotated_functions_in_debug_and_release() {
    let want = annotated_functions();
    // Release: the package built by `cargo xtask package`.
    let (pkg, release) = Package::open(example_package()).expect("release package");
    assert_eq!(pkg.functions.len(), want);
    assert_eq!(release.functions().len(), want);
    // Debug: the cdylib of a debug build.
    let o = run(cargo().args([
        "build",
        "-p",
        "functions-example",
        "--lib",
        "--message-format=short",
    ]));
    assert!(o.status.success(), "debug build failed:\n{}", text(&o));
    let debug =
        FunctionLibrary::open(workspace_root().join("target/debug/libfunctions_example.so"))
            .expect("debug library");
    assert_eq!(debug.functions().len(), want);
    let fps = |l: &FunctionLibrary| {
        l.functions()
            .iter()
            .map(|f| (f.name.clone(), f.fingerprint))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        fps(&debug),
        fps(&release),
        "fingerprints do not depend on the profile"
    );
    // This test binary links functions-example as an rlib: its own registry has the same
    // functions, but the loaded libraries answered from their own images, not from ours.
    let host = rfaas::abi::registered_functions();
    assert_eq!(host.len(), want);
    let names: Vec<&str> = debug.functions().iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, host.iter().map(|e| e.name).collect::<Vec<_>>());
    // The libraries' trampolines live in their own images, not in this executable.
    let here = host
        .iter()
        .map(|e| e.trampoline as usize)
        .collect::<Vec<_>>();
    for f in debug.functions().iter().chain(release.functions()) {
        assert!(
            !here.contains(&f.trampoline_address()),
            "{} resolved to the host's copy",
            f.name
        );
    }
}

#[test]
fn tampered_package_is_refused() {
    let src = example_package();
    let pkg = Package::read(src).expect("manifest");
    let copy = |name: &str| {
        let dir = scratch_dir(name);
        for f in [
            pkg.library.clone(),
            format!("{}.sha256", pkg.library),
            MANIFEST_FILE.to_owned(),
        ] {
            std::fs::copy(src.join(&f), dir.join(&f)).expect("copy package");
        }
        dir
    };
    Package::open(&copy("intact")).expect("an intact copy opens");
    // Tamper with a copy that was never loaded: rewriting a mapped library in place would
    // corrupt the running process (which is why packages are only ever replaced by rename).
    let dir = copy("tampered");
    let lib = dir.join(&pkg.library);
    let mut bytes = std::fs::read(&lib).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&lib, bytes).expect("write");
    match Package::open(&dir) {
        Err(PackageError::HashMismatch {
            path,
            expected,
            found,
        }) => {
            assert_eq!(path, lib);
            assert_eq!(expected, pkg.sha256);
            assert_ne!(found, expected);
        }
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
    // A manifest with an unknown field, or a library path leaving the package: refused.
    let manifest = std::fs::read_to_string(src.join(MANIFEST_FILE)).expect("manifest");
    for (bad, words) in [
        (format!("extra = 1\n{manifest}"), "unknown field"),
        (
            manifest.replace(
                &format!("library = \"{}\"", pkg.library),
                "library = \"../../etc/passwd\"",
            ),
            "plain file name",
        ),
    ] {
        std::fs::write(dir.join(MANIFEST_FILE), bad).expect("write manifest");
        let err = Package::read(&dir)
            .expect_err("bad manifest accepted")
            .to_string();
        assert!(err.contains(words) && err.contains(MANIFEST_FILE), "{err}");
    }
}

fn inspect(path: &std::path::Path) -> std::process::Output {
    run(cargo()
        .args([
            "run",
            "-q",
            "-p",
            "executor",
            "--bin",
            "rfaas-executor",
            "--",
            "inspect",
        ])
        .arg(path))
}

#[test]
fn inspect_prints_every_function() {
    let dir = example_package();
    let (pkg, lib) = Package::open(dir).expect("package");
    for target in [dir.to_path_buf(), dir.join(&pkg.library)] {
        let o = inspect(&target);
        let out = text(&o);
        assert!(
            o.status.success(),
            "inspect {} failed:\n{out}",
            target.display()
        );
        assert!(out.contains(&pkg.sha256), "{out}");
        assert!(
            out.contains(&format!("functions: {}", lib.functions().len())),
            "{out}"
        );
        for f in lib.functions() {
            let line = out
                .lines()
                .find(|l| l.contains(&format!("[{}] {} ", f.index, f.name)))
                .unwrap_or_else(|| panic!("no line for {}:\n{out}", f.name));
            assert!(
                line.contains(&fingerprint_hex(f.fingerprint)) && line.contains(&f.signature),
                "{line}"
            );
        }
    }
}

#[test]
fn inspect_explains_bad_files() {
    let dir = scratch_dir("inspect-bad");
    let not_lib = dir.join("notes.txt");
    std::fs::write(&not_lib, "hello").expect("write");
    for (path, words) in [
        (
            not_lib.clone(),
            "not a shared library for this machine: no ELF header",
        ),
        (dir.join("absent.so"), "cannot read"),
    ] {
        let o = inspect(&path);
        let out = text(&o);
        assert!(!o.status.success(), "inspect accepted {}", path.display());
        assert!(
            out.contains(words) && out.contains(&path.display().to_string()),
            "{out}"
        );
    }
}

#[test]
fn xtask_package_rejects_bad_crates() {
    for (krate, words) in [
        ("no-such-crate", "no crate named `no-such-crate`"),
        ("rfaas", "does not build a cdylib"),
    ] {
        let o = run(cargo()
            .args(["xtask", "package", "-p", krate, "--out"])
            .arg(scratch_dir(&format!("xtask-{krate}"))));
        let out = text(&o);
        assert!(!o.status.success(), "packaging {krate} succeeded:\n{out}");
        assert!(out.contains(words), "{out}");
    }
}

/// `rfaas-executor package` packages a library built anywhere (a crate outside the rfaas
/// workspace): the package verifies and loads like one `cargo xtask package` wrote, is named
/// after the library unless told otherwise, and a file that is no function library, or a name
/// that is a path, is refused.
#[test]
fn the_executor_packages_a_library_built_anywhere() {
    let built = Package::read(example_package()).expect("manifest");
    let library = example_package().join(&built.library);
    let out = scratch_dir("executor-package");
    // `rfaas-executor package LIBRARY ARGS.. --out OUT`.
    let package = |library: &std::path::Path, args: &[&str]| {
        run(std::process::Command::new(tests::executor_binary())
            .arg("package")
            .arg(library)
            .args(args)
            .arg("--out")
            .arg(&out))
    };
    let o = package(&library, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let dir = out.join("functions_example");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        dir.display().to_string()
    );
    let (pkg, lib) = Package::open(&dir).expect("the package verifies and loads");
    assert_eq!(pkg.crate_name, "functions_example");
    assert_eq!(pkg.sha256, built.sha256);
    assert_eq!(pkg.functions, built.functions);
    assert_eq!(lib.functions().len(), built.functions.len());

    let o = package(&library, &["--name", "mine"]);
    assert!(o.status.success(), "{}", text(&o));
    Package::open(&out.join("mine")).expect("the named package");

    // Another library packaged under a name in use replaces the package's library and hash
    // (a client takes the package's only `.sha256` to know what to send).
    let other = out.join("libother.so");
    std::fs::copy(&library, &other).expect("copy");
    let o = package(&other, &["--name", "mine"]);
    assert!(o.status.success(), "{}", text(&o));
    let mut left: Vec<String> = std::fs::read_dir(out.join("mine"))
        .expect("package")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["libother.so", "libother.so.sha256", MANIFEST_FILE]);
    Package::open(&out.join("mine")).expect("the replaced package");

    let not_a_library = out.join("notes.so");
    std::fs::write(&not_a_library, b"not ELF").expect("write");
    for (lib, args) in [
        (&not_a_library, &[][..]),
        (&library, &["--name", "../escape"][..]),
        (&library, &["--name", ""][..]),
    ] {
        let o = package(lib, args);
        assert!(!o.status.success(), "{args:?}: {}", text(&o));
        assert!(
            !out.join("notes").exists()
                && !out.join("../escape").exists()
                && !out.join(MANIFEST_FILE).exists()
        );
    }
}
