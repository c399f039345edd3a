// Window/level of a single-channel modality image plus mask overlay, for display.
// Bindings: the image as r32float, the mask as r8unorm, uniforms below.

struct Params {
    center: f32,
    width: f32,
    invert: f32,     // 1.0 for MONOCHROME1 or user inversion
    opacity: f32,    // mask overlay opacity 0..1
    color: vec4<f32>,
};

@group(0) @binding(0) var image: texture_2d<f32>;
@group(0) @binding(1) var mask: texture_2d<f32>;
@group(0) @binding(2) var<uniform> params: Params;

struct VsOut {
    @builtin(position) pos: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

@vertex
fn vs_main(@builtin(vertex_index) i: u32) -> VsOut {
    // Full-screen triangle.
    let p = vec2<f32>(f32((i << 1u) & 2u), f32(i & 2u));
    var out: VsOut;
    out.pos = vec4<f32>(p * 2.0 - 1.0, 0.0, 1.0);
    out.uv = vec2<f32>(p.x, 1.0 - p.y);
    return out;
}

@fragment
fn fs_main(in: VsOut) -> @location(0) vec4<f32> {
    let size = vec2<f32>(textureDimensions(image));
    let texel = vec2<i32>(in.uv * size);
    let v = textureLoad(image, texel, 0).r;
    // DICOM PS3.3 C.11.2.1.2.1 linear VOI function.
    let lo = params.center - 0.5 - (params.width - 1.0) / 2.0;
    var g = clamp((v - lo) / max(params.width - 1.0, 1.0), 0.0, 1.0);
    g = mix(g, 1.0 - g, params.invert);
    let m = textureLoad(mask, texel, 0).r;
    let base = vec3<f32>(g, g, g);
    let rgb = mix(base, params.color.rgb, m * params.opacity);
    return vec4<f32>(rgb, 1.0);
}
