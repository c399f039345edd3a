//! The display shader (`shaders/window_level.wgsl`, used by www/display.js on WebGPU)
//! parses and validates with naga, the WGSL front end of wgpu. (Headless Chromium here
//! cannot present WebGPU to a canvas, so the browser test exercises the 2D fallback,
//! whose VOI math is the same.)

#[test]
fn window_level_shader_is_valid_wgsl_with_both_entry_points() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders/window_level.wgsl");
    let source = std::fs::read_to_string(&path).unwrap();
    let module = naga::front::wgsl::parse_str(&source)
        .unwrap_or_else(|e| panic!("{}", e.emit_to_string(&source)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{e:?}"));
    let names: Vec<&str> = module
        .entry_points
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["vs_main", "fs_main"]);
    // The uniform block is the 32 bytes www/display.js writes.
    let params = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some("Params"))
        .expect("struct Params");
    assert_eq!(params.1.inner.size(module.to_ctx()), 32);
}
