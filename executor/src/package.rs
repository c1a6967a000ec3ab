//! Function packages: a library, its SHA-256 and a readable manifest under `target/rfaas/`.
//!
//! Layout of a package directory `target/rfaas/<crate>/`:
//! - `lib<crate>.so`: the library, exactly as built (release);
//! - `lib<crate>.so.sha256`: `<hex digest>  lib<crate>.so` (the `sha256sum` format);
//! - `manifest.toml`: crate, library file, digest, ABI version and each function's index,
//!   name, fingerprint and signature.

use crate::library::{FunctionLibrary, LoadError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// File name of a package's manifest.
pub const MANIFEST_FILE: &str = "manifest.toml";

/// Why a package could not be written or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The library could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The library declares no function.
    #[error(
        "{path}: the library exports no rfaas functions (annotate some with `#[rfaas::function]`)"
    )]
    NoFunctions {
        /// The library.
        path: PathBuf,
    },
    /// The manifest cannot be parsed or names something unsafe.
    #[error("{path}: invalid package manifest: {reason}")]
    BadManifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The library's digest differs from the one the package recorded.
    #[error("{path}: SHA-256 mismatch: package records {expected}, file has {found}")]
    HashMismatch {
        /// The library.
        path: PathBuf,
        /// Recorded digest.
        expected: String,
        /// Actual digest.
        found: String,
    },
    /// The loaded library's functions differ from the manifest's.
    #[error("{path}: library functions differ from the package manifest: {reason}")]
    Mismatch {
        /// The library.
        path: PathBuf,
        /// First difference.
        reason: String,
    },
}

/// One function as recorded in a package manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackagedFunction {
    /// Function index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Fingerprint as `0x` + 16 hex digits.
    pub fingerprint: String,
    /// Rust signature.
    pub signature: String,
}

/// A package manifest (`manifest.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// The crate the library was built from.
    #[serde(rename = "crate")]
    pub crate_name: String,
    /// Library file name, inside the package directory.
    pub library: String,
    /// Hex SHA-256 of the library.
    pub sha256: String,
    /// rfaas ABI version of the library.
    pub abi_version: u32,
    /// Functions in index order.
    #[serde(rename = "function")]
    pub functions: Vec<PackagedFunction>,
}

/// Formats a fingerprint as in manifests and `inspect`.
pub fn fingerprint_hex(fp: u64) -> String {
    format!("{fp:#018x}")
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, PackageError> {
    let bytes = std::fs::read(path).map_err(|source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(sha256_hex(&bytes))
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of a digest.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackageError + '_ {
    move |source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `path` atomically (temporary file, then rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PackageError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

impl Package {
    /// Loads `library` (a built cdylib of `crate_name`), reads its manifest and writes the
    /// package to `out_root/<crate_name>/`. Returns the package and its directory.
    pub fn create(
        crate_name: &str,
        library: &Path,
        out_root: &Path,
    ) -> Result<(Package, PathBuf), PackageError> {
        let lib = FunctionLibrary::open(library)?;
        if lib.functions().is_empty() {
            return Err(PackageError::NoFunctions {
                path: library.to_path_buf(),
            });
        }
        let bytes = std::fs::read(library).map_err(io(library))?;
        let file_name = library
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| PackageError::BadManifest {
                path: library.to_path_buf(),
                reason: "library path has no UTF-8 file name".into(),
            })?
            .to_owned();
        let dir = out_root.join(crate_name);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        // A package holds one library: another one packaged here before (a renamed crate, a
        // different library under the same name) goes, with its hash, before ours comes.
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(old) = name.strip_suffix(".sha256")
                && old != file_name
            {
                for stale in [name.as_str(), old] {
                    let path = dir.join(stale);
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(io(&path)(e));
                        }
                        _ => {}
                    }
                }
            }
        }
        let sha256 = sha256_hex(&bytes);
        write_atomic(&dir.join(&file_name), &bytes)?;
        write_atomic(
            &dir.join(format!("{file_name}.sha256")),
            format!("{sha256}  {file_name}\n").as_bytes(),
        )?;
        let package = Package {
            crate_name: crate_name.to_owned(),
            library: file_name,
            sha256,
            abi_version: rfaas::wire::ABI_VERSION,
            functions: lib
                .functions()
                .iter()
                .map(|f| PackagedFunction {
                    index: f.index,
                    name: f.name.clone(),
                    fingerprint: fingerprint_hex(f.fingerprint),
                    signature: f.signature.clone(),
                })
                .collect(),
        };
        let text = format!(
            "# rfaas function package, written by `cargo xtask package` or `rfaas-executor package`.\n{}",
            toml::to_string(&package).map_err(|e| PackageError::BadManifest {
                path: dir.join(MANIFEST_FILE),
                reason: e.to_string()
            })?
        );
        write_atomic(&dir.join(MANIFEST_FILE), text.as_bytes())?;
        Ok((package, dir))
    }

    /// Reads a package directory's manifest (without loading the library).
    pub fn read(dir: &Path) -> Result<Package, PackageError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let package: Package = toml::from_str(&text).map_err(|e| PackageError::BadManifest {
            path: path.clone(),
            reason: e.message().to_owned(),
        })?;
        if package.library.contains('/')
            || package.library.starts_with('.')
            || package.library.is_empty()
        {
            return Err(PackageError::BadManifest {
                path,
                reason: format!("library `{}` must be a plain file name", package.library),
            });
        }
        Ok(package)
    }

    /// Opens a package directory: reads the manifest, verifies the library's SHA-256, loads it
    /// and checks that its functions are exactly the manifest's.
    pub fn open(dir: &Path) -> Result<(Package, FunctionLibrary), PackageError> {
        let package = Package::read(dir)?;
        let lib_path = dir.join(&package.library);
        // Hashed and loaded through one open file: a library replaced at its path in between
        // (a concurrent `cargo xtask package`) is not loaded unverified.
        let mut file = std::fs::File::open(&lib_path).map_err(io(&lib_path))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(io(&lib_path))?;
        let found = hex(&hasher.finalize());
        if found != package.sha256 {
            return Err(PackageError::HashMismatch {
                path: lib_path,
                expected: package.sha256,
                found,
            });
        }
        let lib = FunctionLibrary::open_file(file, &lib_path)?;
        let actual: Vec<(u32, &str, String)> = lib
            .functions()
            .iter()
            .map(|f| (f.index, f.name.as_str(), fingerprint_hex(f.fingerprint)))
            .collect();
        let recorded: Vec<(u32, &str, String)> = package
            .functions
            .iter()
            .map(|f| (f.index, f.name.as_str(), f.fingerprint.clone()))
            .collect();
        if actual != recorded {
            let reason = format!("library has {actual:?}, manifest records {recorded:?}");
            return Err(PackageError::Mismatch {
                path: lib_path,
                reason,
            });
        }
        Ok((package, lib))
    }
}
