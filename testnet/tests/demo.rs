//! The README's main job, `medley-testnet demo`, runs to the end with every check passing.

use std::process::Command;

#[test]
fn demo_passes_every_check() {
    let out = Command::new(medley_testnet::bin_dir().join("medley-testnet"))
        .arg("demo")
        .output()
        .expect("run medley-testnet demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("checks: 11 passed, 0 failed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}
