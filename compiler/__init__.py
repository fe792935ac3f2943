"""The compiler stages: parse, lower to IR with shapes, passes, planning, code generation."""
