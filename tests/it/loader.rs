//! The loader's checks, against hand-written C libraries that break the ABI on purpose.

use executor::{FunctionLibrary, LoadError, Package, PackageError};
use tests::{c_library, c_library_with, scratch_dir};

const PRELUDE: &str = r#"
#include <stddef.h>
#include <stdint.h>
typedef uint32_t (*tramp)(const uint8_t*, size_t, uint8_t*, size_t, size_t*);
struct entry { const char* name; size_t name_len; const char* sig; size_t sig_len; uint64_t fp; tramp t; };
struct manifest { uint64_t magic; uint32_t abi; uint32_t count; const struct entry* entries; };
static uint32_t ok(const uint8_t* i, size_t il, uint8_t* o, size_t oc, size_t* ol) { *ol = 0; return 0; }
#define MAGIC 0x00464d7361616672ull
"#;

/// Builds a fixture whose manifest is `magic, abi, count, entries` over `entries_src`.
fn fixture(name: &str, entries_src: &str, manifest: &str) -> std::path::PathBuf {
    let src = format!(
        "{PRELUDE}\nstatic const struct entry E[] = {{ {entries_src} }};\nstatic const struct manifest M = {{ {manifest} }};\nconst struct manifest* rfaas_manifest(void) {{ return &M; }}\n"
    );
    c_library(name, &src)
}

#[track_caller]
fn check_load(lib: &std::path::Path, want: impl Fn(&LoadError) -> bool, words: &str) {
    match FunctionLibrary::open(lib) {
        Ok(l) => panic!(
            "{} loaded but should not: {:?}",
            lib.display(),
            l.functions()
        ),
        Err(e) => {
            let msg = e.to_string();
            assert!(want(&e), "unexpected error kind: {msg}");
            assert!(
                msg.contains(&lib.display().to_string()),
                "error must name the file: {msg}"
            );
            assert!(msg.contains(words), "error should say `{words}`: {msg}");
        }
    }
}

const ONE: &str = r#"{ "f", 1, "fn f()", 6, 1, ok }"#;

#[test]
fn a_valid_c_fixture_loads() {
    // Proves the fixture layout matches the ABI, so the failures below are the checks at work.
    let lib = fixture("valid", ONE, "MAGIC, RFAAS_ABI, 1, E");
    let l = FunctionLibrary::open(&lib).expect("valid fixture loads");
    assert_eq!(l.functions().len(), 1);
    assert_eq!(
        (l.functions()[0].name.as_str(), l.functions()[0].fingerprint),
        ("f", 1)
    );
}

#[test]
fn wrong_abi_version() {
    let lib = fixture("abi", ONE, "MAGIC, 99, 1, E");
    check_load(
        &lib,
        |e| {
            matches!(
                e,
                LoadError::AbiVersion {
                    found: 99,
                    expected: rfaas::wire::ABI_VERSION,
                    ..
                }
            )
        },
        "ABI version 99",
    );
}

#[test]
fn bad_magic_and_null_manifest() {
    let lib = fixture("magic", ONE, "0x1234, 1, 1, E");
    check_load(
        &lib,
        |e| matches!(e, LoadError::BadManifest { .. }),
        "magic",
    );
    let src = format!("{PRELUDE}\nconst void* rfaas_manifest(void) {{ return 0; }}\n");
    let lib = c_library("nullmanifest", &src);
    check_load(
        &lib,
        |e| matches!(e, LoadError::BadManifest { .. }),
        "null pointer",
    );
}

#[test]
fn duplicate_names() {
    let lib = fixture(
        "dup",
        r#"{ "f", 1, "fn f()", 6, 1, ok }, { "f", 1, "fn f()", 6, 2, ok }"#,
        "MAGIC, RFAAS_ABI, 2, E",
    );
    check_load(
        &lib,
        |e| matches!(e, LoadError::DuplicateFunction { name, .. } if name == "f"),
        "`f` appears more than once",
    );
}

#[test]
fn broken_entries() {
    let cases = [
        (
            "nulltramp",
            r#"{ "f", 1, "fn f()", 6, 1, 0 }"#,
            "null trampoline",
        ),
        (
            "badutf8",
            r#"{ "\xff\xfe", 2, "fn f()", 6, 1, ok }"#,
            "not UTF-8",
        ),
        (
            "longname",
            r#"{ "f", 100000, "fn f()", 6, 1, ok }"#,
            "100000 bytes long",
        ),
        (
            "emptyname",
            r#"{ "", 0, "fn f()", 6, 1, ok }"#,
            "empty name",
        ),
    ];
    for (name, entry, words) in cases {
        let lib = fixture(name, entry, "MAGIC, RFAAS_ABI, 1, E");
        check_load(
            &lib,
            |e| matches!(e, LoadError::BadEntry { index: 0, .. }),
            words,
        );
    }
    let lib = fixture("toomany", ONE, "MAGIC, RFAAS_ABI, 4000000000u, E");
    check_load(
        &lib,
        |e| matches!(e, LoadError::BadManifest { .. }),
        "entries",
    );
}

#[test]
fn missing_symbol_and_non_libraries() {
    let lib = c_library("nosymbol", "int unrelated(void) { return 1; }\n");
    check_load(
        &lib,
        |e| matches!(e, LoadError::MissingManifest { .. }),
        "no `rfaas_manifest` symbol",
    );
    let dir = scratch_dir("notalib");
    // Files that are no shared library for this machine, by their ELF header, are refused
    // before the dynamic loader sees them, and say why.
    let text = dir.join("libtext.so");
    std::fs::write(&text, "not an ELF file").expect("write");
    check_load(
        &text,
        |e| matches!(e, LoadError::NotElf { .. }),
        "not a shared library for this machine: no ELF header (a text file?)",
    );
    let empty = dir.join("libempty.so");
    std::fs::write(&empty, "").expect("write");
    check_load(
        &empty,
        |e| matches!(e, LoadError::NotElf { .. }),
        "not a shared library for this machine: an empty file",
    );
    // A real library's header, changed in one field at a time: its word size (EI_CLASS, 1 for
    // 32-bit, 2 for 64-bit) and its type (e_type, in the file's byte order: 2 an executable).
    let real = std::fs::read(&lib).expect("read fixture");
    let other_class = 3 - real[4];
    let class_words = if other_class == 1 {
        "a 32-bit ELF file"
    } else {
        "a 64-bit ELF file"
    };
    let exec = 2u16.to_ne_bytes();
    for (name, at, value, words) in [
        ("other-class", 4, &[other_class][..], class_words),
        (
            "exec",
            16,
            &exec[..],
            "an ELF executable, not a shared library",
        ),
    ] {
        let mut bytes = real.clone();
        bytes[at..at + value.len()].copy_from_slice(value);
        let crafted = dir.join(format!("lib{name}.so"));
        std::fs::write(&crafted, &bytes).expect("write");
        check_load(&crafted, |e| matches!(e, LoadError::NotElf { .. }), words);
    }
    let short = dir.join("libshort.so");
    std::fs::write(&short, &real[..20]).expect("write");
    check_load(
        &short,
        |e| matches!(e, LoadError::NotElf { .. }),
        "file too short",
    );
    // The same checks through an open file (how an executor of a manager loads its package).
    let file = std::fs::File::open(&text).expect("open");
    match FunctionLibrary::open_file(file, &text) {
        Err(LoadError::NotElf { path, reason }) => {
            assert_eq!(path, text);
            assert_eq!(reason, "no ELF header (a text file?)");
        }
        other => panic!("expected NotElf, got {other:?}"),
    }
    // A shared library for this machine that the dynamic loader refuses (its dependency is
    // missing): the loader's reason.
    let dep = c_library("loaderdep", "int rfaas_test_dep(void) { return 1; }\n");
    let dep_dir = dep.parent().expect("scratch dir").display().to_string();
    let needs = c_library_with(
        "needsloaderdep",
        "int rfaas_test_dep(void);\nint uses_dep(void) { return rfaas_test_dep(); }\n",
        &[&format!("-L{dep_dir}"), "-lloaderdep"],
    );
    check_load(
        &needs,
        |e| matches!(e, LoadError::NotALibrary { .. }),
        "not a loadable shared library: libloaderdep.so: cannot open shared object file",
    );
    let missing = dir.join("missing.so");
    check_load(
        &missing,
        |e| matches!(e, LoadError::Io { .. }),
        "cannot read",
    );
}

#[test]
fn a_library_without_functions_cannot_be_packaged() {
    let lib = fixture("empty", ONE, "MAGIC, RFAAS_ABI, 0, E");
    assert_eq!(
        FunctionLibrary::open(&lib)
            .expect("an empty manifest is valid")
            .functions()
            .len(),
        0
    );
    let out = scratch_dir("empty-package");
    match Package::create("empty", &lib, &out) {
        Err(PackageError::NoFunctions { path }) => assert_eq!(path, lib),
        other => panic!("expected NoFunctions, got {other:?}"),
    }
    assert!(
        !out.join("empty").join("manifest.toml").exists(),
        "no package may be written"
    );
}

#[test]
fn a_library_with_thousands_of_functions_is_served() {
    // Its function table (the session's welcome) is far beyond 64 KiB.
    let n = 3000;
    let entries: Vec<String> = (0..n)
        .map(|i| {
            let name = format!("a_function_with_a_rather_long_descriptive_name_{i:05}");
            let sig = format!("fn {name}()");
            format!(
                "{{ \"{name}\", {}, \"{sig}\", {}, {}, ok }}",
                name.len(),
                sig.len(),
                i + 1
            )
        })
        .collect();
    let lib = fixture(
        "thousands",
        &entries.join(",\n"),
        &format!("MAGIC, RFAAS_ABI, {n}, E"),
    );
    assert_eq!(
        FunctionLibrary::open(&lib)
            .expect("loads")
            .functions()
            .len(),
        n
    );
    let dir = scratch_dir("thousands-exec");
    let socket = dir.join("exec.sock");
    let mut child = std::process::Command::new(tests::executor_binary())
        .arg("run")
        .arg("--library")
        .arg(&lib)
        .arg("--socket")
        .arg(&socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("executor");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("ready line");
    assert!(line.starts_with("ready "), "{line:?}");
    let lease = rfaas::Lease::connect(&socket);
    let _ = child.kill();
    let _ = child.wait();
    let lease = lease.expect("a lease despite a welcome of hundreds of KiB");
    assert_eq!(lease.workers(), 1);
}

/// A library says whether its panics are caught: the example package (`panic = "unwind"`)
/// does; a library built with `panic = "abort"` (here a C fixture stating it) is loaded with a
/// warning and reported so (`inspect` prints it); one that does not say is `None`.
#[test]
fn the_panic_strategy_is_read_from_the_library() {
    let (_, example) = Package::open(tests::example_package()).expect("example package");
    assert_eq!(example.unwinds(), Some(true));
    let plain = fixture("strategy-none", ONE, "MAGIC, RFAAS_ABI, 1, E");
    let plain = FunctionLibrary::open(&plain).expect("loads");
    assert_eq!(plain.unwinds(), None);
    let src = format!(
        "{PRELUDE}\nstatic const struct entry E[] = {{ {ONE} }};\nstatic const struct manifest M = {{ MAGIC, RFAAS_ABI, 1, E }};\nconst struct manifest* rfaas_manifest(void) {{ return &M; }}\nconst unsigned char rfaas_panic_unwinds = 0;\n"
    );
    let aborts = c_library("strategy-abort", &src);
    let lib = FunctionLibrary::open(&aborts).expect("loads, with a warning");
    assert_eq!(lib.unwinds(), Some(false));
    let out = std::process::Command::new(tests::executor_binary())
        .arg("inspect")
        .arg(&aborts)
        .output()
        .expect("inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("a panicking function ends the executor process"),
        "{text}"
    );
}

/// A library loaded through an open file is the file that was opened, not whatever its path
/// names by the time it is loaded (`Package::open` hashes and loads through one descriptor).
#[test]
fn a_library_opened_as_a_file_is_the_file_that_was_opened() {
    let example = Package::read(tests::example_package()).expect("example manifest");
    let dir = scratch_dir("open-file");
    let path = dir.join("libswapped.so");
    std::fs::copy(tests::example_package().join(&example.library), &path).expect("copy");
    let file = std::fs::File::open(&path).expect("open");
    // Another library takes the path after the file was opened (and, say, hashed).
    let other = fixture("swapped-in", ONE, "MAGIC, RFAAS_ABI, 1, E");
    let moved = dir.join("other.so");
    std::fs::copy(&other, &moved).expect("copy");
    std::fs::rename(&moved, &path).expect("rename over");
    let lib = FunctionLibrary::open_file(file, &path).expect("loads");
    assert_eq!(lib.path(), path.as_path());
    assert_eq!(
        lib.functions().len(),
        example.functions.len(),
        "loaded what the path names now, not the file opened: {:?}",
        lib.functions()
    );
    // And by path, the one there now.
    assert_eq!(
        FunctionLibrary::open(&path)
            .expect("loads")
            .functions()
            .len(),
        1
    );
}
