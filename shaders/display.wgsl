// Display of one frame: the engine's 8-bit rendering (VOI, VOI LUT tables and inversion
// applied in Rust by dicom::lut::render_view, the rule `medfm convert --out x.png` uses),
// zoomed and panned (nearest neighbour), with the segment overlay blended on top.
// Used by www/display.js on WebGPU; its 2D fallback blends the same way.
//
// Bindings: 0 the rendered frame (rgba8unorm), 1 the overlay (rgba8unorm: segment colour
// in rgb, coverage in a), 2 the parameters below.
// Canvas pixel p shows image pixel floor((p - offset) / zoom).

struct Params {
    offset: vec2<f32>,
    zoom: f32,
    opacity: f32,    // overlay opacity 0..1
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
    let g = textureLoad(image, texel, 0).rgb;
    let o = textureLoad(overlay, texel, 0);
    return vec4<f32>(mix(g, o.rgb, o.a * params.opacity), 1.0);
}
