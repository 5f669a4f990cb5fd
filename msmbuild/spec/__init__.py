"""Spec parsing: markdown headings become sections with stable ids."""

from msmbuild.spec._parser import Section, Spec, fill_template, parse_spec, parse_spec_text, slugify

__all__ = ["Section", "Spec", "fill_template", "parse_spec", "parse_spec_text", "slugify"]
