"""The .nn grammar (nn.lark), loaded by nnc.compiler.parse."""
