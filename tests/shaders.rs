//! The display shader (`shaders/display.wgsl`, used by www/display.js on WebGPU): it
//! validates with naga, and drawn natively on wgpu (the Vulkan adapter: lavapipe here) it
//! shows exactly the library's rendering of real DICOM frames (`dicom::lut::render`, what
//! `medfm convert --out x.png` writes and the browser's engine returns) with the overlay
//! blended as www/display.js's 2D fallback does, zoomed and panned nearest-neighbour.

mod common;

use common::*;
use medfm::dicom;

fn shader_source() -> String {
    let path = root().join("shaders/display.wgsl");
    std::fs::read_to_string(&path).unwrap()
}

#[test]
fn display_shader_is_valid_wgsl_with_both_entry_points() {
    let source = shader_source();
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
    // The uniform block is the 16 bytes www/display.js writes (offset, zoom, opacity).
    let params = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some("Params"))
        .expect("struct Params");
    assert_eq!(params.1.inner.size(module.to_ctx()), 16);
}

/// The shader on a wgpu device, drawing into an offscreen RGBA8 target.
struct Painter {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: wgpu::RenderPipeline,
}

impl Painter {
    fn new() -> Painter {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapter = futures_lite::future::block_on(
            instance.request_adapter(&wgpu::RequestAdapterOptions::default()),
        )
        .expect("a wgpu adapter (Mesa's lavapipe: apt-get install mesa-vulkan-drivers)");
        let (device, queue) = futures_lite::future::block_on(
            adapter.request_device(&wgpu::DeviceDescriptor::default()),
        )
        .unwrap();
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("display.wgsl"),
            source: wgpu::ShaderSource::Wgsl(shader_source().into()),
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: None,
            layout: None,
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("vs_main"),
                compilation_options: Default::default(),
                buffers: &[],
            },
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some("fs_main"),
                compilation_options: Default::default(),
                targets: &[Some(wgpu::ColorTargetState {
                    format: wgpu::TextureFormat::Rgba8Unorm,
                    blend: None,
                    write_mask: wgpu::ColorWrites::ALL,
                })],
            }),
            multiview_mask: None,
            cache: None,
        });
        Painter {
            device,
            queue,
            pipeline,
        }
    }

    fn texture(&self, cols: u32, rows: u32, rgba: &[u8]) -> wgpu::Texture {
        let size = wgpu::Extent3d {
            width: cols,
            height: rows,
            depth_or_array_layers: 1,
        };
        let t = self.device.create_texture(&wgpu::TextureDescriptor {
            label: None,
            size,
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba8Unorm,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        self.queue.write_texture(
            t.as_image_copy(),
            rgba,
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(cols * 4),
                rows_per_image: Some(rows),
            },
            size,
        );
        t
    }

    /// Draw `image` (RGBA8, `cols x rows`) with `overlay` into a `width x height` canvas
    /// with the display's parameters; returns the canvas RGBA8.
    #[allow(clippy::too_many_arguments)]
    fn draw(
        &self,
        (cols, rows): (u32, u32),
        image: &[u8],
        overlay: &[u8],
        (width, height): (u32, u32),
        offset: [f32; 2],
        zoom: f32,
        opacity: f32,
    ) -> Vec<u8> {
        use wgpu::util::DeviceExt;
        let (d, q) = (&self.device, &self.queue);
        let image = self.texture(cols, rows, image);
        let overlay = self.texture(cols, rows, overlay);
        let params: Vec<u8> = [offset[0], offset[1], zoom, opacity]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let uniforms = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: &params,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let bind = d.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::TextureView(
                        &image.create_view(&Default::default()),
                    ),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::TextureView(
                        &overlay.create_view(&Default::default()),
                    ),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: uniforms.as_entire_binding(),
                },
            ],
        });
        let size = wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers: 1,
        };
        let target = d.create_texture(&wgpu::TextureDescriptor {
            label: None,
            size,
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba8Unorm,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        let stride = (width * 4).div_ceil(256) * 256;
        let readback = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (stride * height) as u64,
            usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
            mapped_at_creation: false,
        });
        let mut enc = d.create_command_encoder(&Default::default());
        {
            let view = target.create_view(&Default::default());
            let mut pass = enc.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: None,
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &view,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color::RED),
                        store: wgpu::StoreOp::Store,
                    },
                })],
                depth_stencil_attachment: None,
                timestamp_writes: None,
                occlusion_query_set: None,
                multiview_mask: None,
            });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.draw(0..3, 0..1);
        }
        enc.copy_texture_to_buffer(
            target.as_image_copy(),
            wgpu::TexelCopyBufferInfo {
                buffer: &readback,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(stride),
                    rows_per_image: Some(height),
                },
            },
            size,
        );
        q.submit([enc.finish()]);
        readback
            .slice(..)
            .map_async(wgpu::MapMode::Read, |r| r.unwrap());
        d.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        let mapped = readback.slice(..).get_mapped_range().unwrap();
        let mut out = Vec::with_capacity((width * height * 4) as usize);
        for y in 0..height {
            let row = &mapped[(y * stride) as usize..][..(width * 4) as usize];
            out.extend_from_slice(row);
        }
        out
    }
}

/// `dicom::lut::render` of frame 0 as RGBA8 (grey repeated in r, g, b).
fn rendered_rgba(file: &std::path::Path) -> (u32, u32, Vec<u8>) {
    let image = dicom::read(&std::fs::read(file).unwrap()).unwrap();
    let frame = image.frame(0).unwrap();
    let (vois, _) = image.vois(0).unwrap();
    let r = dicom::lut::render(&frame, vois.first(), &image.meta.photometric);
    let rgba = (0..frame.rows * frame.cols)
        .flat_map(|i| {
            let px = if r.channels == 1 {
                [r.pixels[i]; 3]
            } else {
                [r.pixels[3 * i], r.pixels[3 * i + 1], r.pixels[3 * i + 2]]
            };
            [px[0], px[1], px[2], 255]
        })
        .collect();
    (frame.cols as u32, frame.rows as u32, rgba)
}

/// An overlay with every coverage 0..255 and three colours.
fn overlay(cols: u32, rows: u32) -> Vec<u8> {
    const COLOURS: [[u8; 3]; 3] = [[230, 60, 60], [60, 200, 90], [70, 130, 240]];
    (0..rows * cols)
        .flat_map(|i| {
            let (x, y) = (i % cols, i / cols);
            let c = COLOURS[((x / 7 + y / 5) % 3) as usize];
            [c[0], c[1], c[2], ((x * 7 + y * 13) % 256) as u8]
        })
        .collect()
}

/// What the canvas must show at image pixel `i` (www/display.js `composite`).
fn composite(image: &[u8], overlay: &[u8], i: usize, opacity: f32) -> [f32; 3] {
    let a = overlay[4 * i + 3] as f32 / 255.0 * opacity;
    [0, 1, 2].map(|c| image[4 * i + c] as f32 * (1.0 - a) + overlay[4 * i + c] as f32 * a)
}

#[test]
fn display_shader_shows_the_library_rendering_with_the_overlay_on_wgpu() {
    let painter = Painter::new();
    let mut files: Vec<_> = ["CT_small.dcm", "MR_small.dcm", "examples_ybr_color.dcm"]
        .iter()
        .map(|f| data(f))
        .collect();
    let mut luts: Vec<_> = std::fs::read_dir(data("lut"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    luts.sort();
    files.extend(luts);
    assert!(files.len() >= 8);
    for file in &files {
        let (cols, rows, image) = rendered_rgba(file);
        let over = overlay(cols, rows);
        for opacity in [0.0f32, 0.5, 1.0] {
            let got = painter.draw(
                (cols, rows),
                &image,
                &over,
                (cols, rows),
                [0.0, 0.0],
                1.0,
                opacity,
            );
            let mut worst = 0.0f32;
            for i in 0..(cols * rows) as usize {
                let want = composite(&image, &over, i, opacity);
                for c in 0..3 {
                    worst = worst.max((got[4 * i + c] as f32 - want[c]).abs());
                }
                assert_eq!(got[4 * i + 3], 255);
            }
            // unorm8 output of a float blend: within one level (rounding); with no
            // overlay, the rendering itself.
            let tol = if opacity == 0.0 { 0.0 } else { 1.0 };
            assert!(
                worst <= tol,
                "{}: opacity {opacity}: worst {worst} levels off",
                file.display()
            );
        }
    }
}

#[test]
fn display_shader_zooms_and_pans_nearest_neighbour() {
    let painter = Painter::new();
    let (cols, rows, image) = rendered_rgba(&data("CT_small.dcm"));
    let none = vec![0u8; (cols * rows * 4) as usize];
    let (width, height) = (300u32, 280u32);
    let (offset, zoom) = ([17.0f32, 9.0f32], 2.0f32);
    let got = painter.draw(
        (cols, rows),
        &image,
        &none,
        (width, height),
        offset,
        zoom,
        0.5,
    );
    for y in 0..height {
        for x in 0..width {
            // Canvas pixel centre (x + 0.5, y + 0.5) shows image pixel floor((p - offset) / zoom).
            let ix = ((x as f32 + 0.5 - offset[0]) / zoom).floor();
            let iy = ((y as f32 + 0.5 - offset[1]) / zoom).floor();
            let o = ((y * width + x) * 4) as usize;
            let want = if ix >= 0.0 && iy >= 0.0 && ix < cols as f32 && iy < rows as f32 {
                let i = (iy as u32 * cols + ix as u32) as usize * 4;
                [image[i], image[i + 1], image[i + 2]]
            } else {
                [0, 0, 0]
            };
            assert_eq!(&got[o..o + 3], &want, "canvas pixel ({x}, {y})");
        }
    }
}
