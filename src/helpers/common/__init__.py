"""The bottom layer: constants, the choices' vocabularies, validators, files, text, seeds, progress bars and worker
pools. Nothing here imports Keras or a plotting library.
"""
