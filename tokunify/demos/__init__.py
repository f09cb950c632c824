"""The offline demos: the default end-to-end demo (:mod:`~tokunify.demos.default`), the instruct demo
(:mod:`~tokunify.demos.instruct`), SSL units (:mod:`~tokunify.demos.ssl`) and the HTML report; their
shared front end is :mod:`~tokunify.demos.common`."""
