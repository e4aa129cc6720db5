# tests/unit/tests.cmake - unit tests that run a real keel server (tests/unit/test_tx_util.h
# starts build/keel): building the test builds the server too, so it never skips silently.
foreach(t test_evstore test_projection test_tx_twopc test_tx_choreo test_tx_choreo_watch)
  if(TARGET ${t})
    add_dependencies(${t} keel-bin)
  endif()
endforeach()

# The AP keyspace simulation (tests/unit/test_apsim.c): test_apsim itself runs seeds 1..300;
# many more under the "slow" label (left out of the sanitizer pass), and the checks bite:
# with a rule broken on purpose some seed must fail.
if(TARGET test_apsim)
  add_test(NAME apsim_seeds_301_10000 COMMAND test_apsim --seeds 301..10000)
  set_tests_properties(apsim_seeds_301_10000 PROPERTIES LABELS slow TIMEOUT 600)
  # seed 12914 lost a W=2 write when a home and its own stand-in counted as two (docs/ap.md)
  add_test(NAME apsim_seed_12914 COMMAND test_apsim --seeds 12914..12914)
  # seed 26202 made a home coordinator stand in for another home after a join (docs/ap.md)
  add_test(NAME apsim_seed_26202 COMMAND test_apsim --seeds 26202..26202)
  foreach(b overwrite no-hints counter-replace no-stream count-answers no-renew)
    add_test(NAME apsim_checks_bite_${b}
             COMMAND test_apsim --seeds 1..300 --break ${b} --expect-failure)
  endforeach()
endif()
