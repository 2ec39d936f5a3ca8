"""Video and images: decoding (``video``), rendering (``render``, ``gl``), cameras, human
pose estimation (``poses``, ``human_video``), perceptual hashes and image embeddings."""
