"""The benchmarks behind `semiseg benchmark`: label efficiency, annotation effort, loop simulation,
predict speed, weak supervision."""
