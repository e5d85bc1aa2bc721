"""The center's domain: catalog, citizens, queue, applications, feedback, volunteers,
staff, audit."""
