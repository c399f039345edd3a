// Frame display: the engine's 8-bit rendering of a frame (window/level, VOI LUT tables
// and inversion applied in Rust, the rule of `medfm convert --out x.png`: see
// MedFM.render) with the segment overlay, zoomed and panned, through WebGPU with
// shaders/display.wgsl or a 2D canvas when WebGPU is absent. No VOI math here.

const WGSL_URL = new URL('../shaders/display.wgsl', import.meta.url);

export class Display {
  /** Create on a canvas; `prefer2d` skips WebGPU. Resolves when ready. */
  static async create(canvas, { prefer2d = false } = {}) {
    const d = new Display(canvas);
    if (!prefer2d) {
      try {
        // Probe presentation on a scratch canvas first: a canvas that once gave a
        // 'webgpu' context cannot give a '2d' one (headless Chromium, for one, creates
        // the device but cannot present).
        const probe = document.createElement('canvas');
        probe.width = probe.height = 8;
        await d._initGpu(probe);
        d.setImage({ rows: 1, cols: 1, rgba: new Uint8Array([0, 0, 0, 255]) });
        d.render();
        await d.gpu.device.queue.onSubmittedWorkDone();
        d.gpu.device.destroy();
        await d._initGpu(canvas);
      } catch (e) {
        d.gpuError = String(e.message || e);
        d.gpu = null;
      }
    }
    d.image = null;
    if (!d.gpu) d.ctx = canvas.getContext('2d');
    return d;
  }

  constructor(canvas) {
    this.canvas = canvas;
    this.gpu = null;
    this.ctx = null;
    this.image = null; // {rows, cols, rgba: Uint8Array rows*cols*4}, from MedFM.render
    this.overlay = null; // Uint8ClampedArray rows*cols*4
    this.view = { opacity: 0.5, zoom: 1, offset: [0, 0] };
  }

  get kind() {
    return this.gpu ? 'webgpu' : '2d';
  }

  async _initGpu(canvas) {
    if (!navigator.gpu) throw new Error('no navigator.gpu');
    const adapter = await navigator.gpu.requestAdapter();
    if (!adapter) throw new Error('no WebGPU adapter');
    const device = await adapter.requestDevice();
    const code = await (await fetch(WGSL_URL)).text();
    const module = device.createShaderModule({ code });
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === 'error');
    if (errors.length) throw new Error(`display shader: ${errors.map((m) => m.message).join('; ')}`);
    const context = canvas.getContext('webgpu');
    const format = navigator.gpu.getPreferredCanvasFormat();
    context.configure({ device, format, alphaMode: 'opaque' });
    const pipeline = device.createRenderPipeline({
      layout: 'auto',
      vertex: { module, entryPoint: 'vs_main' },
      fragment: { module, entryPoint: 'fs_main', targets: [{ format }] },
      primitive: { topology: 'triangle-list' },
    });
    const uniforms = device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    this.gpu = { adapter, device, context, pipeline, uniforms, imageTex: null, overlayTex: null, bind: null };
  }

  /**
   * Show a rendered frame ({rows, cols, rgba}: MedFM.render's result). The overlay is
   * cleared when the size changes.
   */
  setImage(img) {
    const resized = !this.image || this.image.rows !== img.rows || this.image.cols !== img.cols;
    this.image = img;
    if (resized || !this.overlay) this.overlay = new Uint8ClampedArray(img.rows * img.cols * 4);
    if (this.gpu) {
      const g = this.gpu;
      const size = [img.cols, img.rows];
      if (!g.imageTex || g.imageTex.width !== img.cols || g.imageTex.height !== img.rows) {
        if (g.imageTex) g.imageTex.destroy();
        if (g.overlayTex) g.overlayTex.destroy();
        const usage = GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST;
        g.imageTex = g.device.createTexture({ size, format: 'rgba8unorm', usage });
        g.overlayTex = g.device.createTexture({ size, format: 'rgba8unorm', usage });
        g.bind = g.device.createBindGroup({
          layout: g.pipeline.getBindGroupLayout(0),
          entries: [
            { binding: 0, resource: g.imageTex.createView() },
            { binding: 1, resource: g.overlayTex.createView() },
            { binding: 2, resource: { buffer: g.uniforms } },
          ],
        });
      }
      g.device.queue.writeTexture({ texture: g.imageTex }, img.rgba, { bytesPerRow: img.cols * 4 }, size);
      this._uploadOverlay();
    }
  }

  /** Overlay RGBA (segment colour, alpha = coverage), rows*cols*4 bytes. */
  setOverlay(rgba) {
    this.overlay = rgba;
    if (this.gpu) this._uploadOverlay();
  }

  _uploadOverlay() {
    const g = this.gpu;
    const img = this.image;
    g.device.queue.writeTexture({ texture: g.overlayTex }, this.overlay, { bytesPerRow: img.cols * 4 }, [img.cols, img.rows]);
  }

  /** Fit the image in the canvas (zoom and centre). */
  fit() {
    if (!this.image) return;
    const { width, height } = this.canvas;
    const zoom = Math.min(width / this.image.cols, height / this.image.rows);
    this.view.zoom = zoom;
    this.view.offset = [(width - this.image.cols * zoom) / 2, (height - this.image.rows * zoom) / 2];
  }

  /** Canvas pixel (CSS pixels relative to the canvas) to image pixel coordinates. */
  toImage(x, y) {
    const sx = this.canvas.width / this.canvas.clientWidth;
    const sy = this.canvas.height / this.canvas.clientHeight;
    return [(x * sx - this.view.offset[0]) / this.view.zoom, (y * sy - this.view.offset[1]) / this.view.zoom];
  }

  /** Image pixel to canvas (CSS) pixel. */
  toCanvas(x, y) {
    const sx = this.canvas.clientWidth / this.canvas.width;
    const sy = this.canvas.clientHeight / this.canvas.height;
    return [(x * this.view.zoom + this.view.offset[0]) * sx, (y * this.view.zoom + this.view.offset[1]) * sy];
  }

  render() {
    if (!this.image) return;
    const v = this.view;
    if (this.gpu) {
      const g = this.gpu;
      const u = new Float32Array([v.offset[0], v.offset[1], v.zoom, v.opacity]);
      g.device.queue.writeBuffer(g.uniforms, 0, u);
      const enc = g.device.createCommandEncoder();
      const pass = enc.beginRenderPass({
        colorAttachments: [{ view: g.context.getCurrentTexture().createView(), loadOp: 'clear', storeOp: 'store', clearValue: [0, 0, 0, 1] }],
      });
      pass.setPipeline(g.pipeline);
      pass.setBindGroup(0, g.bind);
      pass.draw(3);
      pass.end();
      g.device.queue.submit([enc.finish()]);
      return;
    }
    const img = this.image;
    const out = new ImageData(img.cols, img.rows);
    composite(img.rgba, this.overlay, v.opacity, out.data);
    if (!this._scratch || this._scratch.width !== img.cols || this._scratch.height !== img.rows) {
      this._scratch = new OffscreenCanvas(img.cols, img.rows);
    }
    this._scratch.getContext('2d').putImageData(out, 0, 0);
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    ctx.imageSmoothingEnabled = false;
    ctx.setTransform(v.zoom, 0, 0, v.zoom, v.offset[0], v.offset[1]);
    ctx.drawImage(this._scratch, 0, 0);
  }
}

/**
 * The rendered frame with the overlay blended on top, as the shader does:
 * out = image * (1 - a) + colour * a, a = coverage * opacity (rgba, alpha 255).
 */
export function composite(rgba, overlay, opacity, out) {
  const n = rgba.length >> 2;
  for (let i = 0; i < n; i++) {
    const a = (overlay[i * 4 + 3] / 255) * opacity;
    for (let ch = 0; ch < 3; ch++) {
      out[i * 4 + ch] = rgba[i * 4 + ch] * (1 - a) + overlay[i * 4 + ch] * a;
    }
    out[i * 4 + 3] = 255;
  }
  return out;
}
