global using Crisp.TestSupport;
