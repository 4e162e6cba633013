//! Hosts without NVML: the backend refuses to open with an error that tells
//! the operator GPU groups cannot start and CPU-only groups can.

mod common;

use std::path::{Path, PathBuf};

use common::{Host, cdylib, in_child};
use orch_gpu::{GpuError, NvmlBackend};

fn open_err(path: &Path) -> GpuError {
    match NvmlBackend::open(Some(path)) {
        Ok(backend) => panic!("{} opened: {backend:?}", path.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_library_means_cpu_only() {
    let path = Path::new("/nonexistent/libnvidia-ml.so.1");
    let e = open_err(path);
    let GpuError::NoLibrary { path: seen, reason } = &e else {
        panic!("expected NoLibrary, got {e:?}");
    };
    assert_eq!(seen, path);
    assert!(reason.contains("No such file"), "{reason}");
    assert!(e.is_no_nvml());
    let text = e.to_string();
    for needle in [
        "/nonexistent/libnvidia-ml.so.1",
        "GPU groups cannot start",
        "CPU-only groups can",
        "ORCH_NVML_LIBRARY",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from: {text}");
    }
}

#[test]
fn a_file_that_is_not_a_library() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fake = dir.path().join("libnvidia-ml.so.1");
    std::fs::write(&fake, "not an ELF file\n").expect("write");
    let e = open_err(&fake);
    assert!(
        matches!(&e, GpuError::NoLibrary { path, .. } if *path == fake),
        "{e:?}"
    );
}

#[test]
fn a_library_without_nvml() {
    // The C library loads fine but exports no NVML function.
    let e = open_err(&PathBuf::from("libc.so.6"));
    let GpuError::NoLibrary { reason, .. } = &e else {
        panic!("expected NoLibrary, got {e:?}");
    };
    assert!(reason.contains("not an NVML library"), "{reason}");
}

#[test]
fn driver_not_loaded_is_an_init_error() {
    // The simulator answers nvmlInit with DRIVER_NOT_LOADED when its host
    // description is missing, as NVML does without a kernel driver.
    let host = Host::missing();
    in_child("driver_not_loaded_is_an_init_error", &host, || {
        let lib = cdylib();
        let e = open_err(&lib);
        assert_eq!(
            e,
            GpuError::Init {
                path: lib.clone(),
                reason: "the NVIDIA kernel driver is not loaded".into()
            }
        );
        assert!(e.is_no_nvml());
        let text = e.to_string();
        assert!(text.contains("GPU groups cannot start"), "{text}");
        assert!(text.contains("CPU-only groups can"), "{text}");
    });
}
