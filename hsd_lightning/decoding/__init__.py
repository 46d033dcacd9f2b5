"""Layer-skipping decoders. Public API: ``build_decoder`` and ``Decoder.generate``."""
from .decoders import (
                       CALM,
                       DECODERS,
                       HSD,
                       DecodeOutput,
                       Decoder,
                       SkipDecode,
                       Vanilla,
                       build_decoder,
                       build_paper_decoder,
                       decoder_slug,
)
from .families import FAMILIES, FamilySpec, model_parts

__all__ = ["build_decoder", "build_paper_decoder", "decoder_slug",
           "Decoder", "DecodeOutput", "Vanilla", "SkipDecode", "HSD", "CALM", "DECODERS",
           "FAMILIES", "FamilySpec", "model_parts"]
