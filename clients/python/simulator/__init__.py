"""The city simulator: simulated drivers, origins and customers on a real road network,
talking to the platform only through its public gRPC contracts (the generated betterproto
clients in ``lastmile_client``), like real driver apps, origins and customers would.

Time model. Simulated time starts at the scenario's time of day and runs ``speed`` times
faster than the wall clock. Everything the actors do (driving at road speeds, preparing food,
serving a stop, a customer's delay) is measured in simulated seconds and waited for as
``simulated / speed`` wall seconds. Everything sent to the platform carries *wall-clock*
timestamps (GPS fixes, status and stop events, the proof photo's EXIF, order windows), because
the gateway and the proof service refuse times far from their own clock; so at ``speed`` 20 a
driver covers in one wall second the road of twenty simulated seconds, and the GPS speed it
reports is the simulated road speed. Figures in the report are in simulated seconds (wall
durations times ``speed``), except rates per wall second (pings/s), which say so.

Modules: ``scenario`` (TOML scenarios, CSV replay), ``curve`` (order-rate curve, arrivals),
``gps`` (noise model, motion along a route), ``city`` (road network, places), ``connection``
(channels, tokens, stubs), ``driver``, ``origin``, ``customer`` (actors), ``assign`` (the
baseline assignment policy), ``proofs``, ``metrics``, ``report``, ``run`` (one simulation),
``load`` (load mode, also the tracking benchmark's load generator; its actors in
``load_actors``, its orders in ``load_orders``), ``cli`` (``lastmile simulate``).
"""
