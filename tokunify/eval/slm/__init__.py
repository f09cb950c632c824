"""Speech-LM likelihood benchmarks: layouts, one scorer with explicit conventions, eval-slm."""
