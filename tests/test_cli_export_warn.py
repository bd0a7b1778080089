"""`bluelm-v export --target qnn` says loudly when a compiled graph does not keep the model's answers."""
from bluelm_v.commands.export import numerics_warnings


def test_numerics_warnings_names_each_graph_below_the_agreement_or_cosine_floor():
    report = {"rounding": "blocks", "graphs": {
        "vit": {"cosine": 0.9998},
        "llm_prefill": {"cosine": 0.178, "greedy_agreement": 0.022},
        "llm_decode": {"cosine": 0.99, "greedy_agreement": 0.85},
    }}
    lines = numerics_warnings(report)
    assert len(lines) == 2
    assert lines[0].startswith("WARNING: llm_prefill: greedy agreement 0.022 < 0.9, cosine 0.1780 < 0.95")
    assert "(this export: blocks)" in lines[0]
    assert lines[1].startswith("WARNING: llm_decode: greedy agreement 0.850 < 0.9") and "cosine" not in lines[1].split(
        "against")[0]


def test_numerics_warnings_suggest_int16_matmul_inputs_after_a_uint16_export():
    report = {"rounding": "blocks", "matmul_inputs": "uint16",
              "graphs": {"llm_prefill": {"cosine": 0.9228, "greedy_agreement": 0.335, "matmul_inputs": "uint16"}}}
    (line,) = numerics_warnings(report)
    assert line.startswith("WARNING: llm_prefill: greedy agreement 0.335 < 0.9, cosine 0.9228 < 0.95")
    assert "--matmul-inputs int16 (this export: uint16)" in line
    report["graphs"]["llm_prefill"]["matmul_inputs"] = report["matmul_inputs"] = "int16"
    assert "--matmul-inputs" not in numerics_warnings(report)[0]


def test_numerics_warnings_silent_when_every_graph_keeps_the_answers():
    report = {"graphs": {"llm_prefill": {"cosine": 0.9998, "greedy_agreement": 0.974},
                         "llm_decode": {"cosine": 0.9999, "greedy_agreement": 1.0}}}
    assert numerics_warnings(report) == []
