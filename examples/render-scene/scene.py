"""A tiny scene for the ``render`` runtime, built from an empty file (no .blend to ship).

A glossy sphere on a plane under an area light, the camera circling it over the frames.
"""

import math

import bpy

scene = bpy.context.scene
scene.render.resolution_x, scene.render.resolution_y = 48, 32
scene.frame_start, scene.frame_end = 1, 4

bpy.ops.mesh.primitive_plane_add(size=8)
bpy.ops.mesh.primitive_uv_sphere_add(radius=1, location=(0, 0, 1))
sphere = bpy.context.active_object
material = bpy.data.materials.new("glossy")
material.use_nodes = True
material.node_tree.nodes["Principled BSDF"].inputs["Roughness"].default_value = 0.2
sphere.data.materials.append(material)

bpy.ops.object.light_add(type="AREA", location=(2, -2, 4))
bpy.context.active_object.data.energy = 400

bpy.ops.object.camera_add(location=(6, -6, 4))
camera = bpy.context.active_object
scene.camera = camera
track = camera.constraints.new("TRACK_TO")
track.target = sphere

for frame in (1, 4):  # the camera swings round the sphere: each frame differs
    angle = math.radians(-45 + 30 * (frame - 1))
    camera.location = (8.5 * math.cos(angle), 8.5 * math.sin(angle), 4)
    camera.keyframe_insert("location", frame=frame)
