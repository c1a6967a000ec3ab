use super::*;

/// The ELF header of a shared library for this machine, as the linker writes it.
fn ours() -> [u8; ELF_HEADER_LEN] {
    let mut h = [0u8; ELF_HEADER_LEN];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = ELF_CLASS;
    h[5] = ELF_DATA;
    h[6] = 1; // EV_CURRENT
    h[16..18].copy_from_slice(&ET_DYN.to_ne_bytes());
    h[18..20].copy_from_slice(&ELF_MACHINE.unwrap_or(0).to_ne_bytes());
    h
}

/// A header for this machine passes; every field that makes a file no shared library for it
/// is named, and so is a file too short to hold a header.
#[test]
fn the_elf_header_is_checked_before_the_dynamic_loader() {
    assert_eq!(elf_header_fault(&ours()), None);
    let fault = |edit: &dyn Fn(&mut [u8; ELF_HEADER_LEN])| {
        let mut h = ours();
        edit(&mut h);
        elf_header_fault(&h).expect("refused")
    };
    assert_eq!(
        fault(&|h| h[4] = 3 - ELF_CLASS),
        if ELF_CLASS == 2 {
            "a 32-bit ELF file"
        } else {
            "a 64-bit ELF file"
        }
    );
    assert!(fault(&|h| h[4] = 9).contains("unknown class 9"));
    assert!(fault(&|h| h[5] = 3 - ELF_DATA).ends_with("-endian ELF file"));
    assert_eq!(
        fault(&|h| h[16..18].copy_from_slice(&2u16.to_ne_bytes())),
        "an ELF executable, not a shared library"
    );
    assert!(fault(&|h| h[16..18].copy_from_slice(&1u16.to_ne_bytes())).contains("object file"));
    if let Some(machine) = ELF_MACHINE {
        let other = if machine == 3 { 62u16 } else { 3 };
        assert!(
            fault(&|h| h[18..20].copy_from_slice(&other.to_ne_bytes()))
                .starts_with(&format!("built for another machine (e_machine {other}")),
        );
    }
    assert_eq!(elf_header_fault(b""), Some("an empty file".to_owned()));
    assert_eq!(
        elf_header_fault(b"not an ELF file"),
        Some("no ELF header (a text file?)".to_owned())
    );
    assert!(
        elf_header_fault(b"\x7fEL")
            .unwrap()
            .contains("file too short")
    );
    assert!(
        elf_header_fault(&ours()[..20])
            .unwrap()
            .contains("file too short")
    );
}
