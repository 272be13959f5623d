"""Face restoration on top of super-resolution (`--face-enhance`).

detect.py (MTCNN boxes and five landmarks, offline weights) -> align.py (similarity
transform to the 512x512 FFHQ template, inverse warp, feathered paste) -> restore.py
(GFPGAN / RestoreFormer / CodeFormer through spandrel, one face at a time) ->
enhance.py (FaceEnhancer: wraps any Upscaler or Pipeline).
"""
