// Display of one frame: DICOM linear VOI (window/level) of the modality-LUT values,
// optional inversion (MONOCHROME1 or the user's "invert"), then the segment overlay.
// Used by www/display.js (WebGPU); www/display.js has the same math for its 2D fallback.
//
// Bindings: 0 the frame's modality values (rgba32float, grey in r=g=b), 1 the overlay
// (rgba8unorm: segment colour in rgb, coverage in a), 2 the parameters below.
// Canvas pixel p shows image pixel floor((p - offset) / zoom) (nearest neighbour).

struct Params {
    center: f32,
    width: f32,
    invert: f32,     // 1.0 inverts
    opacity: f32,    // overlay opacity 0..1
    offset: vec2<f32>,
    zoom: f32,
    _pad: f32,
};

@group(0) @binding(0) var image: texture_2d<f32>;
@group(0) @binding(1) var overlay: texture_2d<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@vertex
fn vs_main(@builtin(vertex_index) i: u32) -> @builtin(position) vec4<f32> {
    // One triangle covering the canvas.
    let p = vec2<f32>(f32((i << 1u) & 2u), f32(i & 2u));
    return vec4<f32>(p * 2.0 - 1.0, 0.0, 1.0);
}

@fragment
fn fs_main(@builtin(position) pos: vec4<f32>) -> @location(0) vec4<f32> {
    let size = vec2<f32>(textureDimensions(image));
    let ip = (pos.xy - params.offset) / params.zoom;
    if (ip.x < 0.0 || ip.y < 0.0 || ip.x >= size.x || ip.y >= size.y) {
        return vec4<f32>(0.0, 0.0, 0.0, 1.0);
    }
    let texel = vec2<i32>(floor(ip));
    let v = textureLoad(image, texel, 0).rgb;
    // DICOM PS3.3 C.11.2.1.2.1: y = ((x - (c - 0.5)) / (w - 1) + 0.5), clamped to 0..1.
    let w1 = max(params.width - 1.0, 1.0);
    var g = clamp((v - vec3<f32>(params.center - 0.5)) / w1 + vec3<f32>(0.5), vec3<f32>(0.0), vec3<f32>(1.0));
    g = mix(g, vec3<f32>(1.0) - g, params.invert);
    let o = textureLoad(overlay, texel, 0);
    return vec4<f32>(mix(g, o.rgb, o.a * params.opacity), 1.0);
}
