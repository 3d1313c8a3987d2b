"""Real servers and generated data that both the tests (tests/) and the benchmarks (bench/) start and use."""
