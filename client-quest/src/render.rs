//! Drawing with wgpu: lit, instanced triangles (one draw per geometry), into an offscreen color
//! target that the simulator reads back (screenshots, pixel checks) and that the headset path
//! would replace with the OpenXR swapchain image of each eye. Works on the CPU (lavapipe).

use std::collections::BTreeMap;

use glam::{Mat4, Vec4};
use wgpu::util::DeviceExt as _;

/// Why rendering could not start or a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// No adapter (install `mesa-vulkan-drivers` for a CPU one).
    #[error("no graphics adapter: {0}")]
    NoAdapter(String),
    /// The device could not be created.
    #[error("no graphics device: {0}")]
    NoDevice(String),
    /// Reading the frame back failed.
    #[error("reading the frame back failed: {0}")]
    Readback(String),
}

/// One thing to draw: a mesh (by key, with its triangles the first time) at a place, colored.
#[derive(Clone, Copy, Debug)]
pub struct DrawItem<'a> {
    /// Geometry cache key.
    pub key: &'a str,
    /// Positions, normals, indices (used when the key is new).
    pub mesh: &'a (Vec<[f32; 3]>, Vec<[f32; 3]>, Vec<u32>),
    /// `world_from_model`.
    pub world_from_model: Mat4,
    /// Linear RGBA.
    pub color: Vec4,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Vertex {
    position: [f32; 3],
    normal: [f32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Instance {
    model: [[f32; 4]; 4],
    color: [f32; 4],
}

/// Textured quads drawn after the scene: the off-hand panel and the comfort vignette.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Overlays {
    /// `world_from_panel` (a unit quad in its XY plane, scaled to the panel's size).
    pub panel: Option<Mat4>,
    /// `world_from_vignette`: a quad just in front of the eye, darkening the periphery.
    pub vignette: Option<Mat4>,
}

struct Quad {
    texture: wgpu::Texture,
    uniforms: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    size: (u32, u32),
}

const QUAD_SHADER: &str = r"
struct Q { clip_from_model: array<mat4x4<f32>, 2> };
@group(0) @binding(0) var<uniform> q: Q;
@group(0) @binding(1) var tex: texture_2d<f32>;
@group(0) @binding(2) var samp: sampler;
struct VsOut { @builtin(position) clip: vec4<f32>, @location(0) uv: vec2<f32> };
@vertex
fn vs(@builtin(vertex_index) i: u32 {VIEW_ARG}) -> VsOut {
    var corners = array<vec2<f32>, 6>(vec2(0.0, 0.0), vec2(1.0, 0.0), vec2(1.0, 1.0),
                                      vec2(0.0, 0.0), vec2(1.0, 1.0), vec2(0.0, 1.0));
    let c = corners[i];
    var out: VsOut;
    out.clip = q.clip_from_model[{VIEW}] * vec4<f32>(c.x - 0.5, c.y - 0.5, 0.0, 1.0);
    out.uv = vec2<f32>(c.x, 1.0 - c.y);
    return out;
}
@fragment
fn fs(in: VsOut) -> @location(0) vec4<f32> {
    return textureSample(tex, samp, in.uv);
}
";

/// The comfort vignette's texture: clear in the middle, darkening towards the edges.
fn vignette_image() -> (Vec<u8>, u32) {
    let n = 128u32;
    let mut rgba = Vec::with_capacity((n * n * 4) as usize);
    for y in 0..n {
        for x in 0..n {
            #[allow(clippy::cast_precision_loss, reason = "texel coordinates")]
            let (u, v) = (
                x as f32 / (n - 1) as f32 * 2.0 - 1.0,
                y as f32 / (n - 1) as f32 * 2.0 - 1.0,
            );
            let r = (u * u + v * v).sqrt();
            let a = ((r - 0.45) / 0.5).clamp(0.0, 1.0) * 0.9;
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "0..=255"
            )]
            rgba.extend_from_slice(&[0, 0, 0, (a * 255.0) as u8]);
        }
    }
    (rgba, n)
}

struct Geometry {
    vertices: wgpu::Buffer,
    indices: wgpu::Buffer,
    count: u32,
}

/// The offscreen renderer.
pub struct Renderer {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: wgpu::RenderPipeline,
    uniforms: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    /// The offscreen target (headless); the headset renders into swapchain images instead.
    color: Option<wgpu::Texture>,
    depth: wgpu::TextureView,
    instances: wgpu::Buffer,
    instance_capacity: usize,
    quad_pipeline: wgpu::RenderPipeline,
    quad_layout: wgpu::BindGroupLayout,
    sampler: wgpu::Sampler,
    panel: Option<Quad>,
    vignette: Option<Quad>,
    geometries: BTreeMap<String, Geometry>,
    /// Target size (per eye).
    pub size: (u32, u32),
    /// Layers drawn per pass: 1, or 2 (both eyes, multiview).
    pub views: u32,
    /// The adapter's description (name, backend, device type).
    pub adapter: String,
}

/// The limits the renderer needs: downlevel defaults, plus two multiview views for stereo.
#[must_use]
pub fn stereo_limits(views: u32) -> wgpu::Limits {
    wgpu::Limits {
        max_multiview_view_count: if views == 2 { 2 } else { 0 },
        ..wgpu::Limits::downlevel_defaults()
    }
}

/// What pipelines draw into: the colour format and the number of views (layers).
#[derive(Clone, Copy)]
struct Target {
    format: wgpu::TextureFormat,
    views: u32,
}

impl Target {
    /// A triangle pipeline with `vs`/`fs` entry points, alpha blending, depth tested against
    /// the shared depth buffer (written or not), multiview when there are two views.
    fn pipeline(
        self,
        device: &wgpu::Device,
        label: &str,
        layout: &wgpu::PipelineLayout,
        shader: &wgpu::ShaderModule,
        buffers: &[Option<wgpu::VertexBufferLayout<'_>>],
        depth_write: bool,
    ) -> wgpu::RenderPipeline {
        device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some(label),
            layout: Some(layout),
            vertex: wgpu::VertexState {
                module: shader,
                entry_point: Some("vs"),
                buffers,
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            },
            fragment: Some(wgpu::FragmentState {
                module: shader,
                entry_point: Some("fs"),
                targets: &[Some(wgpu::ColorTargetState {
                    format: self.format,
                    blend: Some(wgpu::BlendState::ALPHA_BLENDING),
                    write_mask: wgpu::ColorWrites::ALL,
                })],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            }),
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: Some(wgpu::DepthStencilState {
                format: DEPTH_FORMAT,
                depth_write_enabled: Some(depth_write),
                depth_compare: Some(wgpu::CompareFunction::Less),
                stencil: wgpu::StencilState::default(),
                bias: wgpu::DepthBiasState::default(),
            }),
            multisample: wgpu::MultisampleState::default(),
            multiview_mask: view_mask(self.views),
            cache: None,
        })
    }
}

/// The same matrix for both eyes when one is given.
fn eyes(clips: &[Mat4]) -> [Mat4; 2] {
    let first = clips.first().copied().unwrap_or(Mat4::IDENTITY);
    [first, clips.get(1).copied().unwrap_or(first)]
}

/// A view over all `views` layers of a target (2D for one, 2D array for two).
fn layers_view(views: u32) -> wgpu::TextureViewDescriptor<'static> {
    wgpu::TextureViewDescriptor {
        dimension: Some(if views == 2 {
            wgpu::TextureViewDimension::D2Array
        } else {
            wgpu::TextureViewDimension::D2
        }),
        array_layer_count: Some(views),
        ..Default::default()
    }
}

impl Renderer {
    /// The device (the headset wraps its swapchain images with it).
    #[must_use]
    pub const fn device(&self) -> &wgpu::Device {
        &self.device
    }
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("size", &self.size)
            .field("adapter", &self.adapter)
            .finish_non_exhaustive()
    }
}

const COLOR_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba8UnormSrgb;

/// A shader for one view, or for both eyes in one pass (multiview: `view_index` picks the eye).
fn shader_for(source: &str, views: u32) -> String {
    if views == 2 {
        source
            .replace("{VIEW_ARG}", ", @builtin(view_index) view: u32")
            .replace("{VIEW}", "view")
    } else {
        source.replace("{VIEW_ARG}", "").replace("{VIEW}", "0u")
    }
}

/// The multiview mask for `views` eyes.
fn view_mask(views: u32) -> Option<std::num::NonZeroU32> {
    (views == 2).then_some(std::num::NonZeroU32::MIN.saturating_add(2))
}
const DEPTH_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Depth32Float;

const SHADER: &str = r"
struct Uniforms { clip_from_world: array<mat4x4<f32>, 2>, light: vec4<f32> };
@group(0) @binding(0) var<uniform> u: Uniforms;

struct VsOut { @builtin(position) clip: vec4<f32>, @location(0) normal: vec3<f32>, @location(1) color: vec4<f32> };

@vertex
fn vs(@location(0) position: vec3<f32>, @location(1) normal: vec3<f32>,
      @location(2) m0: vec4<f32>, @location(3) m1: vec4<f32>, @location(4) m2: vec4<f32>,
      @location(5) m3: vec4<f32>, @location(6) color: vec4<f32> {VIEW_ARG}) -> VsOut {
    let model = mat4x4<f32>(m0, m1, m2, m3);
    var out: VsOut;
    out.clip = u.clip_from_world[{VIEW}] * model * vec4<f32>(position, 1.0);
    out.normal = normalize((model * vec4<f32>(normal, 0.0)).xyz);
    out.color = color;
    return out;
}

@fragment
fn fs(in: VsOut) -> @location(0) vec4<f32> {
    let diffuse = max(dot(normalize(in.normal), normalize(u.light.xyz)), 0.0);
    return vec4<f32>(in.color.rgb * (0.35 + 0.65 * diffuse), in.color.a);
}
";

impl Renderer {
    /// A renderer drawing `width` × `height` offscreen, on whatever adapter exists (a CPU one
    /// included).
    ///
    /// # Errors
    /// [`RenderError`] when no adapter or device is available.
    pub fn headless(width: u32, height: u32) -> Result<Self, RenderError> {
        Self::offscreen(width, height, 1)
    }

    /// Both eyes at once into a two-layer target (multiview), like the headset's swapchain.
    ///
    /// # Errors
    /// [`RenderError`] when no adapter, device or multiview support exists.
    pub fn headless_stereo(width: u32, height: u32) -> Result<Self, RenderError> {
        Self::offscreen(width, height, 2)
    }

    fn offscreen(width: u32, height: u32, views: u32) -> Result<Self, RenderError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::GL;
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            compatible_surface: None,
            force_fallback_adapter: false,
            apply_limit_buckets: false,
        }))
        .map_err(|e| RenderError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let adapter_name = format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type);
        let required_features = if views == 2 {
            if !adapter.features().contains(wgpu::Features::MULTIVIEW) {
                return Err(RenderError::NoDevice(format!(
                    "{adapter_name} has no multiview"
                )));
            }
            wgpu::Features::MULTIVIEW
        } else {
            wgpu::Features::empty()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("meshwork-quest"),
            required_features,
            required_limits: stereo_limits(views),
            ..Default::default()
        }))
        .map_err(|e| RenderError::NoDevice(e.to_string()))?;
        let size = wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers: views,
        };
        let color = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("color"),
            size,
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: COLOR_FORMAT,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        let mut r = Self::for_device(
            device,
            queue,
            COLOR_FORMAT,
            (width, height),
            views,
            adapter_name,
        );
        r.color = Some(color);
        Ok(r)
    }

    /// A renderer drawing into targets of `format` on an existing device (the headset's, shared
    /// with the OpenXR runtime). Targets are `size` per eye and `views` layers (2: both eyes in
    /// one multiview pass; the device needs `Features::MULTIVIEW`).
    #[must_use]
    pub fn for_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        format: wgpu::TextureFormat,
        size: (u32, u32),
        views: u32,
        adapter: String,
    ) -> Self {
        let (width, height) = size;
        let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("lit"),
            source: wgpu::ShaderSource::Wgsl(shader_for(SHADER, views).into()),
        });
        let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("uniforms"),
            size: 144,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("uniforms"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::VERTEX_FRAGMENT,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }],
        });
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("uniforms"),
            layout: &layout,
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: uniforms.as_entire_binding(),
            }],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("lit"),
            bind_group_layouts: &[Some(&layout)],
            ..Default::default()
        });
        let vertex_attrs = wgpu::vertex_attr_array![0 => Float32x3, 1 => Float32x3];
        let instance_attrs = wgpu::vertex_attr_array![2 => Float32x4, 3 => Float32x4, 4 => Float32x4, 5 => Float32x4, 6 => Float32x4];
        let buffers = [
            Some(wgpu::VertexBufferLayout {
                array_stride: size_of::<Vertex>() as u64,
                step_mode: wgpu::VertexStepMode::Vertex,
                attributes: &vertex_attrs,
            }),
            Some(wgpu::VertexBufferLayout {
                array_stride: size_of::<Instance>() as u64,
                step_mode: wgpu::VertexStepMode::Instance,
                attributes: &instance_attrs,
            }),
        ];
        let target = Target { format, views };
        let pipeline = target.pipeline(&device, "lit", &pipeline_layout, &shader, &buffers, true);
        let size = wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers: views,
        };
        let depth = device
            .create_texture(&wgpu::TextureDescriptor {
                label: Some("depth"),
                size,
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: DEPTH_FORMAT,
                usage: wgpu::TextureUsages::RENDER_ATTACHMENT,
                view_formats: &[],
            })
            .create_view(&layers_view(views));
        let quad_shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("quad"),
            source: wgpu::ShaderSource::Wgsl(shader_for(QUAD_SHADER, views).into()),
        });
        let quad_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("quad"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::VERTEX,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
                wgpu::BindGroupLayoutEntry {
                    binding: 1,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Texture {
                        sample_type: wgpu::TextureSampleType::Float { filterable: true },
                        view_dimension: wgpu::TextureViewDimension::D2,
                        multisampled: false,
                    },
                    count: None,
                },
                wgpu::BindGroupLayoutEntry {
                    binding: 2,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Sampler(wgpu::SamplerBindingType::Filtering),
                    count: None,
                },
            ],
        });
        let quad_pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("quad"),
            bind_group_layouts: &[Some(&quad_layout)],
            ..Default::default()
        });
        // Overlays blend over the scene without writing depth.
        let quad_pipeline = target.pipeline(
            &device,
            "quad",
            &quad_pipeline_layout,
            &quad_shader,
            &[],
            false,
        );
        let sampler = device.create_sampler(&wgpu::SamplerDescriptor {
            label: Some("quad"),
            mag_filter: wgpu::FilterMode::Linear,
            min_filter: wgpu::FilterMode::Linear,
            ..Default::default()
        });
        let instance_capacity = 1024;
        let instances = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("instances"),
            size: (instance_capacity * size_of::<Instance>()) as u64,
            usage: wgpu::BufferUsages::VERTEX | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Self {
            device,
            queue,
            pipeline,
            uniforms,
            bind_group,
            color: None,
            depth,
            instances,
            instance_capacity,
            quad_pipeline,
            quad_layout,
            sampler,
            panel: None,
            vignette: None,
            geometries: BTreeMap::new(),
            size: (width, height),
            views,
            adapter,
        }
    }

    fn quad(&self, label: &str, width: u32, height: u32) -> Quad {
        let texture = self.device.create_texture(&wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d {
                width,
                height,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba8UnormSrgb,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        let uniforms = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: 128,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &self.quad_layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: uniforms.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::TextureView(&view),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::Sampler(&self.sampler),
                },
            ],
        });
        Quad {
            texture,
            uniforms,
            bind_group,
            size: (width, height),
        }
    }

    fn upload(&self, quad: &Quad, rgba: &[u8]) {
        self.queue.write_texture(
            quad.texture.as_image_copy(),
            rgba,
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(quad.size.0 * 4),
                rows_per_image: Some(quad.size.1),
            },
            wgpu::Extent3d {
                width: quad.size.0,
                height: quad.size.1,
                depth_or_array_layers: 1,
            },
        );
    }

    /// Replaces the panel's image.
    pub fn set_panel(&mut self, image: &crate::ui::Image) {
        if self
            .panel
            .as_ref()
            .is_none_or(|q| q.size != (image.width, image.height))
        {
            self.panel = Some(self.quad("panel", image.width, image.height));
        }
        if let Some(q) = &self.panel {
            self.upload(q, &image.rgba);
        }
    }

    fn ensure_vignette(&mut self) {
        if self.vignette.is_none() {
            let (rgba, n) = vignette_image();
            let q = self.quad("vignette", n, n);
            self.upload(&q, &rgba);
            self.vignette = Some(q);
        }
    }

    fn geometry(&mut self, key: &str, mesh: &(Vec<[f32; 3]>, Vec<[f32; 3]>, Vec<u32>)) {
        if self.geometries.contains_key(key) {
            return;
        }
        let vertices: Vec<Vertex> = mesh
            .0
            .iter()
            .zip(mesh.1.iter())
            .map(|(p, n)| Vertex {
                position: *p,
                normal: *n,
            })
            .collect();
        let g = Geometry {
            vertices: self
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(key),
                    contents: bytemuck::cast_slice(&vertices),
                    usage: wgpu::BufferUsages::VERTEX,
                }),
            indices: self
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(key),
                    contents: bytemuck::cast_slice(&mesh.2),
                    usage: wgpu::BufferUsages::INDEX,
                }),
            count: u32::try_from(mesh.2.len()).unwrap_or(u32::MAX),
        };
        self.geometries.insert(key.to_owned(), g);
    }

    /// Draws one view (`clip_from_world` = projection × view) of `items` into the offscreen
    /// target and waits for the GPU.
    pub fn render(
        &mut self,
        clip_from_world: &[Mat4],
        items: &[DrawItem<'_>],
        overlays: &Overlays,
    ) {
        let Some(color) = self.color.as_ref() else {
            return;
        };
        let view = color.create_view(&layers_view(self.views));
        self.render_into(&view, clip_from_world, items, overlays);
    }

    /// Draws `items` into `target` and waits for the GPU: one view, or both eyes in one
    /// multiview pass into a two-layer target (`clip_from_world` per eye).
    pub fn render_into(
        &mut self,
        target: &wgpu::TextureView,
        clip_from_world: &[Mat4],
        items: &[DrawItem<'_>],
        overlays: &Overlays,
    ) {
        if overlays.vignette.is_some() {
            self.ensure_vignette();
        }
        for (quad, model) in [
            (&self.panel, overlays.panel),
            (&self.vignette, overlays.vignette),
        ] {
            if let (Some(q), Some(m)) = (quad, model) {
                let both: Vec<f32> = eyes(clip_from_world)
                    .iter()
                    .flat_map(|c| (*c * m).to_cols_array())
                    .collect();
                self.queue
                    .write_buffer(&q.uniforms, 0, bytemuck::cast_slice(&both));
            }
        }
        // Group by geometry: one instanced draw each.
        let mut groups: BTreeMap<&str, Vec<Instance>> = BTreeMap::new();
        for item in items {
            self.geometry(item.key, item.mesh);
            groups.entry(item.key).or_default().push(Instance {
                model: item.world_from_model.to_cols_array_2d(),
                color: item.color.to_array(),
            });
        }
        // A key names one mesh's content for good (a new revision or preview comes with a new
        // key): buffers no item drew this frame are freed.
        self.geometries
            .retain(|key, _| groups.contains_key(key.as_str()));
        let total: usize = groups.values().map(Vec::len).sum();
        if total > self.instance_capacity {
            self.instance_capacity = total.next_power_of_two();
            self.instances = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("instances"),
                size: (self.instance_capacity * size_of::<Instance>()) as u64,
                usage: wgpu::BufferUsages::VERTEX | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
        }
        let mut all = Vec::with_capacity(total);
        let mut ranges = Vec::new();
        for (key, inst) in &groups {
            let start = u32::try_from(all.len()).unwrap_or(u32::MAX);
            all.extend_from_slice(inst);
            ranges.push((*key, start, u32::try_from(all.len()).unwrap_or(u32::MAX)));
        }
        self.queue
            .write_buffer(&self.instances, 0, bytemuck::cast_slice(&all));
        let mut uniforms: Vec<f32> = eyes(clip_from_world)
            .iter()
            .flat_map(Mat4::to_cols_array)
            .collect();
        uniforms.extend_from_slice(&[0.4, 1.0, 0.6, 0.0]);
        self.queue
            .write_buffer(&self.uniforms, 0, bytemuck::cast_slice(&uniforms));
        let view = target;
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("frame"),
            });
        let multiview_mask = view_mask(self.views);
        {
            let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("scene"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color {
                            r: 0.012,
                            g: 0.014,
                            b: 0.02,
                            a: 1.0,
                        }),
                        store: wgpu::StoreOp::Store,
                    },
                })],
                depth_stencil_attachment: Some(wgpu::RenderPassDepthStencilAttachment {
                    view: &self.depth,
                    depth_ops: Some(wgpu::Operations {
                        load: wgpu::LoadOp::Clear(1.0),
                        store: wgpu::StoreOp::Store,
                    }),
                    stencil_ops: None,
                }),
                multiview_mask,
                ..Default::default()
            });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &self.bind_group, &[]);
            pass.set_vertex_buffer(1, self.instances.slice(..));
            for (key, start, end) in ranges {
                let Some(g) = self.geometries.get(key) else {
                    continue;
                };
                pass.set_vertex_buffer(0, g.vertices.slice(..));
                pass.set_index_buffer(g.indices.slice(..), wgpu::IndexFormat::Uint32);
                pass.draw_indexed(0..g.count, 0, start..end);
            }
            // Overlays after the scene, blended; the vignette last, nearest the eye.
            pass.set_pipeline(&self.quad_pipeline);
            for (quad, model) in [
                (&self.panel, overlays.panel),
                (&self.vignette, overlays.vignette),
            ] {
                if let (Some(q), Some(_)) = (quad, model) {
                    pass.set_bind_group(0, &q.bind_group, &[]);
                    pass.draw(0..6, 0..1);
                }
            }
        }
        self.queue.submit([encoder.finish()]);
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
    }

    /// The last frame as tightly packed RGBA8 (sRGB) rows.
    ///
    /// # Errors
    /// [`RenderError::Readback`] when mapping fails.
    pub fn read_rgba(&self) -> Result<Vec<u8>, RenderError> {
        self.read_layer(0)
    }

    /// One layer (eye) of the last frame, as [`Self::read_rgba`].
    ///
    /// # Errors
    /// [`RenderError::Readback`] when mapping fails or the layer does not exist.
    pub fn read_layer(&self, layer: u32) -> Result<Vec<u8>, RenderError> {
        if layer >= self.views {
            return Err(RenderError::Readback(format!("no layer {layer}")));
        }
        let color = self.color.as_ref().ok_or_else(|| {
            RenderError::Readback("this renderer draws into the headset's images".into())
        })?;
        let (w, h) = self.size;
        let row = w * 4;
        let padded =
            row.div_ceil(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT) * wgpu::COPY_BYTES_PER_ROW_ALIGNMENT;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: u64::from(padded) * u64::from(h),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        encoder.copy_texture_to_buffer(
            wgpu::TexelCopyTextureInfo {
                origin: wgpu::Origin3d {
                    x: 0,
                    y: 0,
                    z: layer,
                },
                ..color.as_image_copy()
            },
            wgpu::TexelCopyBufferInfo {
                buffer: &buffer,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(padded),
                    rows_per_image: Some(h),
                },
            },
            wgpu::Extent3d {
                width: w,
                height: h,
                depth_or_array_layers: 1,
            },
        );
        self.queue.submit([encoder.finish()]);
        let slice = buffer.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        rx.recv()
            .map_err(|e| RenderError::Readback(e.to_string()))?
            .map_err(|e| RenderError::Readback(e.to_string()))?;
        let mapped = slice
            .get_mapped_range()
            .map_err(|e| RenderError::Readback(e.to_string()))?;
        let mut out = Vec::with_capacity((row * h) as usize);
        for y in 0..h {
            let start = (y * padded) as usize;
            out.extend_from_slice(mapped.get(start..start + row as usize).unwrap_or_default());
        }
        Ok(out)
    }

    /// Writes the last frame as a PNG.
    ///
    /// # Errors
    /// Readback or file errors, as text.
    pub fn save_png(&self, path: &std::path::Path) -> Result<(), String> {
        let rgba = self.read_rgba().map_err(|e| e.to_string())?;
        let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut encoder =
            png::Encoder::new(std::io::BufWriter::new(file), self.size.0, self.size.1);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&rgba).map_err(|e| e.to_string())
    }
}
